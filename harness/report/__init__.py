"""Stage 6, report: report.md, report.html and the writer of the run's report files."""
