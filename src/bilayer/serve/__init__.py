"""``bilayer serve``: the web app (make an avatar, animate a video, drive it live from the webcam)."""
