"""Reading ECG files: one module per format family behind `read_ecg`."""
from .record import STANDARD_LEADS, ECGRecord

__all__ = ["ECGRecord", "STANDARD_LEADS"]
