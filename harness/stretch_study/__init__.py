"""The stretch and floor studies: measurements on loaded models, tables, reports (library behind `stabprobe stretch` / `floor`)."""
