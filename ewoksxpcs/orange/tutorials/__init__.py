"""Tutorial workflows shown in the Orange canvas (Help → Tutorials)."""
