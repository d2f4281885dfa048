"""Paper tables and figures from the result store, with the paper's numbers beside ours."""
