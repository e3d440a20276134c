"""Meta (Facebook/Instagram ads): daily spend per campaign from the Marketing API insights."""
