"""Tables and plots rebuilt from run records only (never imports training code)."""
