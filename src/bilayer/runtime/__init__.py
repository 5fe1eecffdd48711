"""Runtime: avatars (avatar.py), baking (bake.py), backends and ONNX export, and the streamed `animate` pipeline
(driver → motion → render → compose → videoio)."""
