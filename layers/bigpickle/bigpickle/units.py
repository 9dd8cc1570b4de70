"""Byte sizes with their units spelled out."""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
