from setuptools import setup

setup(
    install_requires=[
        "Flask>=3.1",
        "click>=8.1",
        "gunicorn[gevent]>=23",
        "flask-cors>=5",
        "prometheus_client>=0.20",
    ],
    extras_require={
        "redis": ["redis>=5"],
        "datastar": ["datastar-py>=0.6"],
        "test": [
            "datastar-py>=0.6",
            "wheel",
            "redis>=5",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "requests>=2.31",
            "sseclient-py>=1.8",
            "httpx>=0.27",
            "httpx-sse>=0.4",
            "playwright>=1.45",
            "mypy>=1.10",
            "waitress>=3",
            "coverage>=7.10",
        ],
        "dev": [
            "ruff>=0.8",
            "mypy>=1.10",
            "types-requests",
            "sphinx>=7",
            "pallets-sphinx-themes>=2.1",
            "myst-parser>=3",
        ],
    },
)
