"""An OpenAI-compatible model simulator that stands in for GPU model servers."""
