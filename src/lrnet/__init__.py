"""lrnet: landmark-based deepfake video detection (LRNet, Sun et al., CVPR 2021).

Pipeline, one module per stage::

    video -> extract (faces + 68 landmarks) -> calibration (optical flow + Kalman)
          -> landmarks (frames x 136 files) -> features (blocks, differences)
          -> model (g1/g2 bidirectional-GRU branches) -> scoring (block -> video score)
          -> datasets / train / evaluate (metrics)

The command line lives in `lrnet.cli`.
"""

__version__ = "0.1.0"
