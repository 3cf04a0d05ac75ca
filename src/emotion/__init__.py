"""The emotion-recognition library: every module the scripts in src/ share (see the README's module map)."""
