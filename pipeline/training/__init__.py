"""Training: datasets over flight folders and public data, weak labels, paired fusion data, the train loop."""
