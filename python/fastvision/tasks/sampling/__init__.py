"""S-NET, ProgressiveNet and SampleNet application code: training recipes, the accuracy-vs-ratio
experiment, the point-op and sampling-op benchmarks and the demo section."""
