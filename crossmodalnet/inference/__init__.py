"""Floor 3: a trained model in use. The saved-model manifest (what a model was set up with), loading any saved
model, predicting new cells at a chosen time, writing outputs, and conformal prediction intervals."""
