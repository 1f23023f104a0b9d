"""The predictor every backend implements, with the pre/postprocessing and the pipeline they share."""
