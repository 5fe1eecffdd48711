"""Face and video tools that preprocessing and the animation application share.

- ``video``: decoding videos and image folders (PyAV), reading images, frame times and sampling;
- ``landmarks``: 68-point landmark backends (MediaPipe, face-alignment, dlib), tracking the main face, keypoint files;
- ``segmentation``: foreground-mask backends;
- ``crop``: the released crop protocol (the face box from keypoints) and its stabilised form;
- ``smoothing``: One-Euro filters for keypoints and boxes;
- ``index_map``: MediaPipe's face-mesh vertices as the 68 iBUG points;
- ``registry``, ``errors``: the backend registry and the errors these tools raise.
"""
