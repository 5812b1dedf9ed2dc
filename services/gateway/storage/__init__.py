"""Object storage for uploads: buckets, objects, presigned uploads."""
