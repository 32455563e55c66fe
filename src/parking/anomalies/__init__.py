"""The anomaly review queue: what the platform could not decide alone (a misread plate, a
missed exit, a stay past the review limits), and the operator's resolution of it."""
