"""The edge that speaks to hardware in its makers' own protocols (see README.md here)."""
