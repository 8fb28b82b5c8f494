"""PAD-Net application code: training recipes (student, teacher, distillation), the Tables 5/6
experiment, the encoder benchmark, the demo section and ``fastvision detect``."""
