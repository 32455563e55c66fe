"""Driver accounts: phone + one-time code login, token pairs, bound plates, plate claims."""
