"""The batch labeling service (`densedpo serve`): an HTTP API and a durable SQLite job store around the labeler."""
