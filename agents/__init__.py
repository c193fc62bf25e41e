"""RL agents for the adaglimpse-env environments; imports adaglimpse_env, never the reverse."""
