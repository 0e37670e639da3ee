"""uplion accounts: users, API tokens, quotas, prices and usage through the admin API."""
