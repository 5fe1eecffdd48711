"""Evaluation: complexity accounting now; metrics arrive with the evaluation issue."""
