"""Settings of the slow real-model (Gemma-3-270M) fixtures, shared by tests/conftest.py and the tests."""

# Tokens per language of the session's UDHR statistics: the claims checked on them need every
# language, not every token (the whole UDHR is 2-3x more and takes about 3 min on 2 cores).
GEMMA_UDHR_TOKENS = 1536
