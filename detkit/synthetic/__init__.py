"""Synthetic data generators that need neither torch nor the datasets package (numpy and OpenCV only), so that
``tools/dataset_converters/make_shapes.py`` and its worker processes start without importing torch."""
