"""Active-learning and calibration workbench for a dual-input (pre/post stain) cervical classifier.

The library holds all domain logic; ``workers`` (Celery), ``ui`` (Streamlit) and the CLI are thin
adapters over it. This package never imports Celery or Streamlit.
"""

__version__ = "0.1.0"
