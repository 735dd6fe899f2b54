"""Engine adapters. Each module registers its engine class with
``@register_engine(kind)``; ``InferenceConfig.ready()`` imports them."""
