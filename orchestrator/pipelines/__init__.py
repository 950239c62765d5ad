"""Test kinds (unit, integration, data validation, model performance), the app and ML
pipelines, and model metrics with their drift checks.
"""
