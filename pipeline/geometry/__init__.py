"""Camera geometry: WGS84 / ENU projection, camera-to-camera registration, GPS search regions."""
