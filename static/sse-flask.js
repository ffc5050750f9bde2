// Placeholder: replaced by the browser helper (issue 4).
