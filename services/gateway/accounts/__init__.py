"""Accounts: users and login, sessions, passwords, IAM users/groups/policies (guide chapter 2), the audit log."""
