"""The pieces of the patchpilot UI, each drawing one part of the page with Streamlit from the API's answers.

- `common`: formatting helpers (times, durations, names, host rows), pure and testable without Streamlit;
- `session`: the API client for the identity in force, who is signed in, the API's words (`GET /api/v1/meta`);
- `status`: the status line in the sidebar;
- `proposal`: the proposal card with Approve / Reject;
- `progress`: one request as it is now, the live run under its card, redrawn until it ends;
- `inbox`: the approvals inbox;
- `jobs`: the Jobs page;
- `chat`: the Chat page and the conversations list.
"""
