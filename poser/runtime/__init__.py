"""Runtimes: what runs a network's forward (torch, ONNX Runtime, OpenVINO), the exported files
they read, the cache of exports with its parity records, and the one choice among them
(`choice.load_networks`)."""
