"""Plumbing shared by every part: the bad-input error and its one-line report (`errors`, `cli`), output folders
written all at once (`files`), and child processes that end with their parent (`process_lifetime`)."""
