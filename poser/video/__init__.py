"""Videos: threaded frame reading and writing, and tracking people through the frames."""
