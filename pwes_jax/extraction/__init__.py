"""Feature extraction from raw videos: frames, TV-L1 optical flow and the two-stream I3D."""
