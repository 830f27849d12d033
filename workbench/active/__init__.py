"""Active learning: acquisition strategies, the leased labelling queue and expert agreement."""
