"""MediaPipe face mesh (468 or 478 vertices) → the 68 iBUG / 300-W landmarks used by the reference model.

The reference keypoints come from face-alignment's 2-D FAN, which predicts the 68-point iBUG layout (reference §1.1,
§1.5). MediaPipe's face mesh is a dense surface mesh with its own vertex numbering, so each iBUG point is defined
here as one mesh vertex or the mean of two adjacent vertices. The table was written by hand from the mesh's own
contours (face oval, eyebrows, eyes, lips, nose) and checked on ``skimage.data.astronaut()``: points sit on the
eye corners and lids, the upper eyebrow edge, the nose bridge and nostril base, both lip contours and the jaw
line (docs/preprocessing.md shows the overlay and explains every group).

Image-left / image-right: iBUG numbers the jaw from the subject's right ear (image left) to the left ear; MediaPipe
calls the subject's right eye "right" (vertex 33 = its outer corner, image left). So iBUG 36 (image-left eye, outer
corner) is mesh vertex 33, and iBUG 45 (image-right eye, outer corner) is mesh vertex 263.

Choices that are not one-to-one:

* **Jaw (0–16).** The mesh's face oval has 36 vertices; the 17 iBUG jaw points are the oval vertices from the
  temple at eye height (127 / 356) down to the chin (152), with two vertex means where an iBUG point falls between
  two oval vertices (2, 5, 11, 14). iBUG 0 and 16 sit at the height of the outer eye corners, as in 300-W.
* **Eyebrows (17–26).** The upper eyebrow contour of the mesh (70 63 105 66 107 / 336 296 334 293 300): 300-W marks
  the top edge of the brow.
* **Nose bridge (27–30).** 168 (between the eyes, at the eye-corner height), mean(6, 197), mean(195, 5), 4 (the tip
  as seen from the front; mesh vertex 1 is the most protruding point but sits too close to the nostril base).
* **Nostrils (31–35).** The lower nose contour: mean(98, 97), 97, 2 (subnasale), 326, mean(326, 327).
* **Eyes (36–47).** Corners are exact (33/133, 362/263); the two lid points on each lid are the mesh lid vertices at
  about one third and two thirds of the way between the corners.
* **Lips (48–67).** Corners 61/291 (outer) and 78/308 (inner); the other points are the lip-contour vertices (or the
  mean of two) nearest to the 300-W spacing (about 35 % and 70 % of the way from the corner to the centre).
"""

from __future__ import annotations

import numpy as np

#: For each of the 68 iBUG points (in order), the mesh vertices whose mean gives that point.
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16: image-left temple (eye height) → chin (8) → image-right temple
    (127,), (234,), (93, 132), (58,), (172,), (136, 150), (149,), (148,), (152,),
    (377,), (378,), (365, 379), (397,), (288,), (323, 361), (454,), (356,),
    # eyebrow 17-21 (image left, outer → inner) and 22-26 (image right, inner → outer): upper brow edge
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30 (top → tip) and nostril base 31-35 (image left → right)
    (168,), (6, 197), (195, 5), (4,),
    (98, 97), (97,), (2,), (326,), (326, 327),
    # eye 36-41 (image left): outer corner, upper lid ×2, inner corner, lower lid ×2
    (33,), (160,), (158,), (133,), (153,), (144,),
    # eye 42-47 (image right): inner corner, upper lid ×2, outer corner, lower lid ×2
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59: left corner, upper lip → right corner, lower lip back to the left
    (61,), (40, 39), (37,), (0,), (267,), (269, 270), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67: left corner, upper → right corner, lower back to the left
    (78,), (82,), (13,), (312,), (308,), (317, 402), (14,), (87, 178),
)

assert len(MEDIAPIPE_TO_IBUG68) == 68

# A (68, 468) averaging matrix: ibug = W @ mesh.
_WEIGHTS = np.zeros((68, 468), np.float64)
for _i, _verts in enumerate(MEDIAPIPE_TO_IBUG68):
    _WEIGHTS[_i, list(_verts)] = 1.0 / len(_verts)


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """(468 or 478, D) face-mesh vertices → (68, D) float32 iBUG landmarks (same units as the input).

    The 10 iris vertices of the refined 478-vertex mesh are ignored.
    """
    mesh = np.asarray(mesh)
    if mesh.ndim != 2 or mesh.shape[0] < 468:
        raise ValueError(f"expected (468 or 478, D) face-mesh vertices, got shape {mesh.shape}")
    return (_WEIGHTS @ mesh[:468].astype(np.float64)).astype(np.float32)
