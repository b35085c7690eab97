"""Did training help? Pair a trained model's samples with its base model's, judge them per segment, measure their
motion, and report both with intervals (`densedpo evaluate`)."""
