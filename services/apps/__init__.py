"""Apps that drive the platform through its API: the `maas` CLI and the browser console."""
