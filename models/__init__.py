"""TurboTrain models: pure PyTorch + spconv + einops. No distributed code lives here."""
