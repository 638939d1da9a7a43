"""Importers from the datasets' annotation tables into the project's dataset layout.

One job a module: :mod:`.registry` (datasets, entry points such as :func:`import_casme2`),
:mod:`.casme2` and :mod:`.header_tables` (SAMM-LV, CAS(ME)^3) read the tables, :mod:`.rows`
keeps the rows' bookkeeping, :mod:`.convert` applies the table rules, :mod:`.features` reads
the user's features and num_frames CSV, :mod:`.frames` maps rows to the features' frames and
:mod:`.write` writes the dataset directory. Every public name is re-exported here.
"""

from pwes_jax.data.importers.casme2 import casme2_subject_of, read_casme2_rows
from pwes_jax.data.importers.convert import convert_row, round_frame
from pwes_jax.data.importers.features import (FEATURE_DIM, LGSNET_WINDOW, SourceFeatures,
                                              VideoRecord, feature_names, feature_sources,
                                              lgsnet_stride, load_source_features,
                                              read_lgsnet, read_num_frames_csv,
                                              read_source_features, read_video_records)
from pwes_jax.data.importers.frames import resample_interval, resample_parsed
from pwes_jax.data.importers.header_tables import (casme3_subject_of, read_casme3_rows,
                                                   read_samm_lv_rows, samm_lv_subject_of,
                                                   type_from_file_name)
from pwes_jax.data.importers.registry import (DEFAULTS, IMPORTERS, READERS, SUBJECT_OF,
                                              import_casme2, import_casme3, import_samm_lv,
                                              parse_casme2, parse_casme3, parse_samm_lv,
                                              read_table)
from pwes_jax.data.importers.rows import (REPORT_FILE, WARNINGS_SHOWN_PER_RULE, Parsed, RawRow,
                                          Report, Row, Where, expression_type, table_paths,
                                          table_types)
from pwes_jax.data.importers.write import check_output_dir, import_parsed, short_summary

__all__ = [
    "DEFAULTS", "FEATURE_DIM", "IMPORTERS", "LGSNET_WINDOW", "READERS", "REPORT_FILE",
    "SUBJECT_OF", "WARNINGS_SHOWN_PER_RULE", "Parsed", "RawRow", "Report", "Row",
    "SourceFeatures", "VideoRecord", "Where",
    "casme2_subject_of", "casme3_subject_of", "check_output_dir", "convert_row",
    "expression_type", "feature_names", "feature_sources", "import_casme2", "import_casme3",
    "import_parsed", "import_samm_lv", "lgsnet_stride", "load_source_features", "parse_casme2",
    "parse_casme3", "parse_samm_lv", "read_casme2_rows", "read_casme3_rows", "read_lgsnet",
    "read_num_frames_csv", "read_samm_lv_rows", "read_source_features", "read_table",
    "read_video_records", "resample_interval",
    "resample_parsed", "round_frame", "samm_lv_subject_of", "short_summary", "table_paths",
    "table_types", "type_from_file_name",
]
