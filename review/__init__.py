"""The trust loop: look at labels and label segments by hand (`densedpo review`), and measure judges (`eval-labels`)."""
