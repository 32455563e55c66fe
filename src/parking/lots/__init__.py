"""Operator companies (运营公司) and the lots they own: which lots a staff member may act on."""
