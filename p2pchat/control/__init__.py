"""Local control API: newline-delimited JSON over a user-only Unix socket."""
