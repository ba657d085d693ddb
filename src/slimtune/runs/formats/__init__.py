"""Other tools' adapter formats: Hugging Face PEFT directories written (export) and read (import)."""
