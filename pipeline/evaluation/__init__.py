"""Scoring: MOT metrics (motmetrics), detection AP (VOC, COCO via pycocotools), pointing accuracy."""
