"""Training, distillation and evaluation with Lightning + MONAI."""
