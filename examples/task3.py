"""Task 3: reports which framework packages the image provides."""

from importlib.metadata import version

for package in ("langgraph", "langchain-openai", "openai"):
    print(f"{package} {version(package)}")
