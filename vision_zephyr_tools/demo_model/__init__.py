"""The tiny demo model in `demo/`: its synthetic shapes task, its training recipe and its evaluation."""
