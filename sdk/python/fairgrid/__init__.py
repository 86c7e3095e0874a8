"""fairgrid's Python client: a thin layer over a node's HTTP API."""

from .blake3 import blake3
from .client import ApiError, Client, Job, connect, default_data_dir, load_job_file

__all__ = ["ApiError", "Client", "Job", "blake3", "connect", "default_data_dir", "load_job_file"]
__version__ = "0.1.0"
