"""The exact globals a scikit-learn model pickle may import: classes and functions, never whole packages.

A pickle names every callable it runs as a global (module + name); everything outside this list is
refused by the staging scanner and by the restricted unpickler. Packages are not listed wholesale
because they hold functions that read files or run code (`numpy.load`, `numpy.f2py`, `joblib.load`,
`sklearn.utils._testing`, ...). Both numpy spellings are listed: numpy 2 pickles name `numpy._core.*`,
numpy 1 pickles `numpy.core.*`.

The estimator table was taken from `sklearn.utils.all_estimators()` of scikit-learn 1.9 (the defining
module of each class, which is what a pickle names), and the state tables from pickling every one of them
and their common options (tests/safety/test_coverage.py measures it). `PICKLE_ALLOWLIST_EXTRA` adds more,
at the operator's risk (docs/security.md).

Two kinds, as data: RECONSTRUCTORS, which the unpickler may call, and REFERENCE_ONLY functions and types a
model may keep but that nothing calls while unpickling (`Allowlist.may_call`). CLASS_ARGUMENT says which
classes a reconstructor that instantiates its argument may be given (`Allowlist.may_instantiate`);
`functools.partial` may wrap only REFERENCE_ONLY_FUNCTIONS (`Allowlist.may_wrap`, checked by safety.audit).
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bigpickle.formats import JOBLIB

# numpy internals a pickled array, scalar, dtype or random state is rebuilt from, in both spellings.
_NUMPY_CORE = {
    "multiarray": ("_reconstruct", "scalar"),
    "numeric": ("_frombuffer",),
}
_NUMPY = {
    **{f"numpy.{core}.{mod}": names for core in ("core", "_core") for mod, names in _NUMPY_CORE.items()},
    "numpy": ("dtype",),
    # masked arrays: GridSearchCV's cv_results_ (parameter columns)
    "numpy.ma.core": ("MaskedArray", "_mareconstruct"),
    "numpy.ma": ("MaskedArray",),
    "numpy.random._pickle": ("__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor"),
    "numpy.random.mtrand": ("RandomState",),
    "numpy.random._generator": ("Generator",),
    "numpy.random._mt19937": ("MT19937",),
    "numpy.random._pcg64": ("PCG64", "PCG64DXSM"),
    "numpy.random._philox": ("Philox",),
    "numpy.random._sfc64": ("SFC64",),
    "numpy.random.bit_generator": ("SeedSequence", "__pyx_unpickle_SeedSequence"),
}

# Functions and types a model keeps as attributes (a FunctionTransformer's func, a pooling or score function,
# a dtype parameter) and calls at predict time. The pickle protocol never calls them while unpickling: a
# stream that does (`numpy.exp(numpy.ndarray((10**9,)))`, `numpy.absolute(src, out)`) is refused.
_NUMPY_SCALAR_TYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
    "uint16", "uint8", "bool_", "intp", "str_", "bytes_", "object_", "complex128")  # fmt: skip
_NUMPY_DTYPE_CLASSES = tuple(f"{kind}DType" for kind in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int16",
    "Int8", "UInt64", "UInt32", "UInt16", "UInt8", "Bool", "Object", "Str", "Bytes", "Void"))  # fmt: skip
_NUMPY_UFUNCS = ("log", "log1p", "log2", "log10", "exp", "expm1", "sqrt", "square", "absolute", "sign", "tanh",
    "arcsinh")  # fmt: skip
# numpy's reductions a FeatureAgglomeration pools with, and the math a FunctionTransformer applies.
_NUMPY_FUNCTIONS = ("mean", "median", "max", "min", "amax", "amin", "sum")
_REFERENCE_ONLY_FUNCTIONS = {
    "numpy": (*_NUMPY_UFUNCS, *_NUMPY_FUNCTIONS),
    # univariate score functions (SelectKBest and co.): statistics of the training data, called at fit
    "sklearn.feature_selection._univariate_selection": ("f_classif", "f_regression", "chi2", "r_regression"),
    "sklearn.feature_selection._mutual_info": ("mutual_info_classif", "mutual_info_regression"),
    # the metrics behind scoring strings a fitted search or threshold tuner keeps in its scorer
    "sklearn.metrics._classification": (
        "accuracy_score",
        "balanced_accuracy_score",
        "f1_score",
        "fbeta_score",
        "precision_score",
        "recall_score",
        "log_loss",
        "matthews_corrcoef",
    ),
    "sklearn.metrics._ranking": ("roc_auc_score", "average_precision_score"),
    "sklearn.metrics._regression": (
        "r2_score",
        "mean_squared_error",
        "mean_absolute_error",
        "explained_variance_score",
    ),
    # BisectingKMeans keeps the single-run k-means it fitted with
    "sklearn.cluster._kmeans": ("_kmeans_single_lloyd", "_kmeans_single_elkan"),
    # scipy's BSpline (SplineTransformer) keeps its array namespace's asarray
    "scipy._lib.array_api_compat.numpy._aliases": ("asarray",),
    # HistGradientBoosting*(categorical_features="from_dtype") keeps functools.partial(check_array, ...)
    "sklearn.utils.validation": ("check_array",),
}
_REFERENCE_ONLY_TYPES = {
    # ndarray is the subtype argument of `_reconstruct`; calling it allocates whatever shape it is given
    "numpy": ("ndarray", *_NUMPY_SCALAR_TYPES),
    "numpy.dtypes": _NUMPY_DTYPE_CLASSES,
    # pandas' missing-value singleton (SimpleImputer(missing_values=pd.NA)): pandas 3 and pandas 2 spellings
    "pandas": ("NA",),
    "pandas._libs.missing": ("NA",),
}

# Containers and helpers the pickle protocol itself uses. `_codecs.encode` is how protocol 2 stores bytes.
_PYTHON = {
    "builtins": ("slice", "set", "frozenset", "bytes", "bytearray", "complex", "object", "range"),
    "copyreg": ("_reconstructor", "__newobj__"),
    # calling partial(f) only wraps f; the audit (safety.audit) checks f is a REFERENCE_ONLY function
    "functools": ("partial",),
    "collections": ("OrderedDict", "defaultdict"),
    "_codecs": ("encode",),
}

_SCIPY = {
    **{
        f"scipy.sparse._{kind}": (f"{kind}_matrix", f"{kind}_array")
        for kind in ("csr", "csc", "coo", "bsr", "dia", "dok", "lil")
    },
    "scipy.interpolate._bsplines": ("BSpline",),  # SplineTransformer's splines
}

# pandas objects a pipeline fitted on a DataFrame may keep (column selections, categories, missing-value
# markers): indexes and dtypes only, under pandas 3 (`pandas.*`) and pandas 2 (defining module) names.
# Series, DataFrame, Categorical and their block managers are refused on purpose (docs/security.md).
_PANDAS_DATA = {
    "Index": "pandas.core.indexes.base",
    "RangeIndex": "pandas.core.indexes.range",
    "MultiIndex": "pandas.core.indexes.multi",
    "CategoricalDtype": "pandas.core.dtypes.dtypes",
    "StringDtype": "pandas.core.arrays.string_",
    "BooleanDtype": "pandas.core.arrays.boolean",
    **dict.fromkeys(("Float32Dtype", "Float64Dtype"), "pandas.core.arrays.floating"),
    **dict.fromkeys(
        (f"{sign}Int{bits}Dtype" for sign in ("", "U") for bits in (8, 16, 32, 64)), "pandas.core.arrays.integer"
    ),
}
_PANDAS = {
    "pandas": tuple(_PANDAS_DATA),
    **{module: tuple(n for n, m in _PANDAS_DATA.items() if m == module) for module in set(_PANDAS_DATA.values())},
    "pandas.core.indexes.base": ("Index", "_new_Index"),
    # an Index of strings is backed by a StringArray, rebuilt by Cython's generated unpickler
    "pandas.arrays": ("StringArray",),
    "pandas.core.arrays.string_": ("StringArray", "StringDtype"),
    "pandas._libs.arrays": ("__pyx_unpickle_NDArrayBacked",),
}

# Objects estimators keep in their fitted state (trees, losses, binners, distance metrics, optimizers).
_LOSSES = (
    "HalfSquaredError",
    "AbsoluteError",
    "PinballLoss",
    "HuberLoss",
    "HalfPoissonLoss",
    "HalfGammaLoss",
    "HalfTweedieLoss",
    "HalfTweedieLossIdentity",
    "HalfBinomialLoss",
    "HalfMultinomialLoss",
    "ExponentialLoss",
)
_METRICS = (
    "Euclidean",
    "SEuclidean",
    "Manhattan",
    "Chebyshev",
    "Minkowski",
    "Mahalanobis",
    "Hamming",
    "Canberra",
    "BrayCurtis",
    "Jaccard",
    "Matching",
    "Dice",
    "Kulsinski",
    "RogersTanimoto",
    "RussellRao",
    "SokalMichener",
    "SokalSneath",
    "Haversine",
)
_SKLEARN_STATE = {
    "sklearn.tree._tree": ("Tree",),
    "sklearn._loss.loss": _LOSSES,
    "sklearn._loss._loss": tuple(f"Cy{n}" for n in _LOSSES) + tuple(f"__pyx_unpickle_Cy{n}" for n in _LOSSES),
    "sklearn._loss.link": (
        "Interval",
        "IdentityLink",
        "LogLink",
        "LogitLink",
        "HalfLogitLink",
        "MultinomialLogit",
    ),
    "sklearn.metrics._dist_metrics": ("newObj", *tuple(f"{m}Distance{b}" for m in _METRICS for b in (64, 32))),
    "sklearn.neighbors._kd_tree": ("KDTree", "KDTree64", "KDTree32", "newObj"),
    "sklearn.neighbors._ball_tree": ("BallTree", "BallTree64", "BallTree32", "newObj"),
    "sklearn.ensemble._hist_gradient_boosting.binning": ("_BinMapper",),
    "sklearn.ensemble._hist_gradient_boosting.predictor": ("TreePredictor",),
    "sklearn.neural_network._stochastic_optimizers": ("AdamOptimizer", "SGDOptimizer"),
    "sklearn.utils._bunch": ("Bunch",),
    "sklearn.linear_model._sgd_fast": (
        "Hinge",
        "SquaredHinge",
        "ModifiedHuber",
        "EpsilonInsensitive",
        "SquaredEpsilonInsensitive",
    ),
    "sklearn.gaussian_process.kernels": (
        "Hyperparameter",
        "CompoundKernel",
        "Sum",
        "Product",
        "Exponentiation",
        "ConstantKernel",
        "WhiteKernel",
        "RBF",
        "Matern",
        "RationalQuadratic",
        "ExpSineSquared",
        "DotProduct",
        "PairwiseKernel",
    ),
    "sklearn.gaussian_process._gpc": ("_BinaryGaussianProcessClassifierLaplace",),
    "sklearn.calibration": ("_CalibratedClassifier", "_SigmoidCalibration", "_TemperatureScaling"),
    "sklearn.cluster._birch": ("_CFNode", "_CFSubcluster"),
    "sklearn.cluster._bisect_k_means": ("_BisectingTree",),
    # what a fitted search keeps: its default scorer and the splitter it checked cv into
    "sklearn.metrics._scorer": ("_PassthroughScorer", "_Scorer", "_CurveScorer"),
    "sklearn.utils._metadata_requests": ("MetadataRequest", "MethodMetadataRequest"),
    "sklearn.multiclass": ("_ConstantPredictor",),
    "sklearn.model_selection._split": ("KFold", "StratifiedKFold"),
    "sklearn.compose._column_transformer": ("make_column_selector",),
}

# Every estimator class scikit-learn 1.9 ships, under the module that defines it.
_SKLEARN_ESTIMATORS = {
    "sklearn.calibration": ("CalibratedClassifierCV",),
    "sklearn.cluster._affinity_propagation": ("AffinityPropagation",),
    "sklearn.cluster._agglomerative": (
        "AgglomerativeClustering",
        "FeatureAgglomeration",
    ),
    "sklearn.cluster._bicluster": (
        "SpectralBiclustering",
        "SpectralCoclustering",
    ),
    "sklearn.cluster._birch": ("Birch",),
    "sklearn.cluster._bisect_k_means": ("BisectingKMeans",),
    "sklearn.cluster._dbscan": ("DBSCAN",),
    "sklearn.cluster._hdbscan.hdbscan": ("HDBSCAN",),
    "sklearn.cluster._kmeans": (
        "KMeans",
        "MiniBatchKMeans",
    ),
    "sklearn.cluster._mean_shift": ("MeanShift",),
    "sklearn.cluster._optics": ("OPTICS",),
    "sklearn.cluster._spectral": ("SpectralClustering",),
    "sklearn.compose._column_transformer": ("ColumnTransformer",),
    "sklearn.compose._target": ("TransformedTargetRegressor",),
    "sklearn.covariance._elliptic_envelope": ("EllipticEnvelope",),
    "sklearn.covariance._empirical_covariance": ("EmpiricalCovariance",),
    "sklearn.covariance._graph_lasso": (
        "GraphicalLasso",
        "GraphicalLassoCV",
    ),
    "sklearn.covariance._robust_covariance": ("MinCovDet",),
    "sklearn.covariance._shrunk_covariance": (
        "LedoitWolf",
        "OAS",
        "ShrunkCovariance",
    ),
    "sklearn.cross_decomposition._pls": (
        "CCA",
        "PLSCanonical",
        "PLSRegression",
        "PLSSVD",
    ),
    "sklearn.decomposition._dict_learning": (
        "DictionaryLearning",
        "MiniBatchDictionaryLearning",
        "SparseCoder",
    ),
    "sklearn.decomposition._factor_analysis": ("FactorAnalysis",),
    "sklearn.decomposition._fastica": ("FastICA",),
    "sklearn.decomposition._incremental_pca": ("IncrementalPCA",),
    "sklearn.decomposition._kernel_pca": ("KernelPCA",),
    "sklearn.decomposition._lda": ("LatentDirichletAllocation",),
    "sklearn.decomposition._nmf": (
        "MiniBatchNMF",
        "NMF",
    ),
    "sklearn.decomposition._pca": ("PCA",),
    "sklearn.decomposition._sparse_pca": (
        "MiniBatchSparsePCA",
        "SparsePCA",
    ),
    "sklearn.decomposition._truncated_svd": ("TruncatedSVD",),
    "sklearn.discriminant_analysis": (
        "LinearDiscriminantAnalysis",
        "QuadraticDiscriminantAnalysis",
    ),
    "sklearn.dummy": (
        "DummyClassifier",
        "DummyRegressor",
    ),
    "sklearn.ensemble._bagging": (
        "BaggingClassifier",
        "BaggingRegressor",
    ),
    "sklearn.ensemble._forest": (
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "RandomTreesEmbedding",
    ),
    "sklearn.ensemble._gb": (
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
    ),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting": (
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    ),
    "sklearn.ensemble._iforest": ("IsolationForest",),
    "sklearn.ensemble._stacking": (
        "StackingClassifier",
        "StackingRegressor",
    ),
    "sklearn.ensemble._voting": (
        "VotingClassifier",
        "VotingRegressor",
    ),
    "sklearn.ensemble._weight_boosting": (
        "AdaBoostClassifier",
        "AdaBoostRegressor",
    ),
    "sklearn.feature_extraction._dict_vectorizer": ("DictVectorizer",),
    "sklearn.feature_extraction._hash": ("FeatureHasher",),
    "sklearn.feature_extraction.image": ("PatchExtractor",),
    "sklearn.feature_extraction.text": (
        "CountVectorizer",
        "HashingVectorizer",
        "TfidfTransformer",
        "TfidfVectorizer",
    ),
    "sklearn.feature_selection._from_model": ("SelectFromModel",),
    "sklearn.feature_selection._rfe": (
        "RFE",
        "RFECV",
    ),
    "sklearn.feature_selection._sequential": ("SequentialFeatureSelector",),
    "sklearn.feature_selection._univariate_selection": (
        "GenericUnivariateSelect",
        "SelectFdr",
        "SelectFpr",
        "SelectFwe",
        "SelectKBest",
        "SelectPercentile",
    ),
    "sklearn.feature_selection._variance_threshold": ("VarianceThreshold",),
    "sklearn.frozen._frozen": ("FrozenEstimator",),
    "sklearn.gaussian_process._gpc": ("GaussianProcessClassifier",),
    "sklearn.gaussian_process._gpr": ("GaussianProcessRegressor",),
    "sklearn.impute._base": (
        "MissingIndicator",
        "SimpleImputer",
    ),
    "sklearn.impute._knn": ("KNNImputer",),
    "sklearn.isotonic": ("IsotonicRegression",),
    "sklearn.kernel_approximation": (
        "AdditiveChi2Sampler",
        "Nystroem",
        "PolynomialCountSketch",
        "RBFSampler",
        "SkewedChi2Sampler",
    ),
    "sklearn.kernel_ridge": ("KernelRidge",),
    "sklearn.linear_model._base": ("LinearRegression",),
    "sklearn.linear_model._bayes": (
        "ARDRegression",
        "BayesianRidge",
    ),
    "sklearn.linear_model._coordinate_descent": (
        "ElasticNet",
        "ElasticNetCV",
        "Lasso",
        "LassoCV",
        "MultiTaskElasticNet",
        "MultiTaskElasticNetCV",
        "MultiTaskLasso",
        "MultiTaskLassoCV",
    ),
    "sklearn.linear_model._glm.glm": (
        "GammaRegressor",
        "PoissonRegressor",
        "TweedieRegressor",
    ),
    "sklearn.linear_model._huber": ("HuberRegressor",),
    "sklearn.linear_model._least_angle": (
        "Lars",
        "LarsCV",
        "LassoLars",
        "LassoLarsCV",
        "LassoLarsIC",
    ),
    "sklearn.linear_model._logistic": (
        "LogisticRegression",
        "LogisticRegressionCV",
    ),
    "sklearn.linear_model._omp": (
        "OrthogonalMatchingPursuit",
        "OrthogonalMatchingPursuitCV",
    ),
    "sklearn.linear_model._passive_aggressive": (
        "PassiveAggressiveClassifier",
        "PassiveAggressiveRegressor",
    ),
    "sklearn.linear_model._perceptron": ("Perceptron",),
    "sklearn.linear_model._quantile": ("QuantileRegressor",),
    "sklearn.linear_model._ransac": ("RANSACRegressor",),
    "sklearn.linear_model._ridge": (
        "Ridge",
        "RidgeCV",
        "RidgeClassifier",
        "RidgeClassifierCV",
    ),
    "sklearn.linear_model._stochastic_gradient": (
        "SGDClassifier",
        "SGDOneClassSVM",
        "SGDRegressor",
    ),
    "sklearn.linear_model._theil_sen": ("TheilSenRegressor",),
    "sklearn.manifold._classical_mds": ("ClassicalMDS",),
    "sklearn.manifold._isomap": ("Isomap",),
    "sklearn.manifold._locally_linear": ("LocallyLinearEmbedding",),
    "sklearn.manifold._mds": ("MDS",),
    "sklearn.manifold._spectral_embedding": ("SpectralEmbedding",),
    "sklearn.manifold._t_sne": ("TSNE",),
    "sklearn.mixture._bayesian_mixture": ("BayesianGaussianMixture",),
    "sklearn.mixture._gaussian_mixture": ("GaussianMixture",),
    "sklearn.model_selection._classification_threshold": (
        "FixedThresholdClassifier",
        "TunedThresholdClassifierCV",
    ),
    "sklearn.model_selection._search": (
        "GridSearchCV",
        "RandomizedSearchCV",
    ),
    "sklearn.multiclass": (
        "OneVsOneClassifier",
        "OneVsRestClassifier",
        "OutputCodeClassifier",
    ),
    "sklearn.multioutput": (
        "ClassifierChain",
        "MultiOutputClassifier",
        "MultiOutputRegressor",
        "RegressorChain",
    ),
    "sklearn.naive_bayes": (
        "BernoulliNB",
        "CategoricalNB",
        "ComplementNB",
        "GaussianNB",
        "MultinomialNB",
    ),
    "sklearn.neighbors._classification": (
        "KNeighborsClassifier",
        "RadiusNeighborsClassifier",
    ),
    "sklearn.neighbors._graph": (
        "KNeighborsTransformer",
        "RadiusNeighborsTransformer",
    ),
    "sklearn.neighbors._kde": ("KernelDensity",),
    "sklearn.neighbors._lof": ("LocalOutlierFactor",),
    "sklearn.neighbors._nca": ("NeighborhoodComponentsAnalysis",),
    "sklearn.neighbors._nearest_centroid": ("NearestCentroid",),
    "sklearn.neighbors._regression": (
        "KNeighborsRegressor",
        "RadiusNeighborsRegressor",
    ),
    "sklearn.neighbors._unsupervised": ("NearestNeighbors",),
    "sklearn.neural_network._multilayer_perceptron": (
        "MLPClassifier",
        "MLPRegressor",
    ),
    "sklearn.neural_network._rbm": ("BernoulliRBM",),
    "sklearn.pipeline": (
        "FeatureUnion",
        "Pipeline",
    ),
    "sklearn.preprocessing._data": (
        "Binarizer",
        "KernelCenterer",
        "MaxAbsScaler",
        "MinMaxScaler",
        "Normalizer",
        "PowerTransformer",
        "QuantileTransformer",
        "RobustScaler",
        "StandardScaler",
    ),
    "sklearn.preprocessing._discretization": ("KBinsDiscretizer",),
    "sklearn.preprocessing._encoders": (
        "OneHotEncoder",
        "OrdinalEncoder",
    ),
    "sklearn.preprocessing._function_transformer": ("FunctionTransformer",),
    "sklearn.preprocessing._label": (
        "LabelBinarizer",
        "LabelEncoder",
        "MultiLabelBinarizer",
    ),
    "sklearn.preprocessing._polynomial": (
        "PolynomialFeatures",
        "SplineTransformer",
    ),
    "sklearn.preprocessing._target_encoder": ("TargetEncoder",),
    "sklearn.random_projection": (
        "GaussianRandomProjection",
        "SparseRandomProjection",
    ),
    "sklearn.semi_supervised._label_propagation": (
        "LabelPropagation",
        "LabelSpreading",
    ),
    "sklearn.semi_supervised._self_training": ("SelfTrainingClassifier",),
    "sklearn.svm._classes": (
        "LinearSVC",
        "LinearSVR",
        "NuSVC",
        "NuSVR",
        "OneClassSVM",
        "SVC",
        "SVR",
    ),
    "sklearn.tree._classes": (
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
    ),
}

# Only joblib files may carry joblib's array placeholder; its bytes follow it in the file.
JOBLIB_ARRAY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")


def canonical(module: str, name: str) -> tuple[str, str]:
    """Python 2 spellings (`__builtin__`, `copy_reg`) as Python 3 resolves them, so one list covers both."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _pairs(table: Mapping[str, Iterable[str]]) -> set[tuple[str, str]]:
    return {(module, name) for module, names in table.items() for name in names}


# May be referenced, never called while unpickling (see `Allowlist.may_call`).
REFERENCE_ONLY_FUNCTIONS: frozenset[tuple[str, str]] = frozenset(_pairs(_REFERENCE_ONLY_FUNCTIONS))
REFERENCE_ONLY: frozenset[tuple[str, str]] = REFERENCE_ONLY_FUNCTIONS | _pairs(_REFERENCE_ONLY_TYPES)

# Classes and reconstructors: what REDUCE, NEWOBJ, OBJ and INST may call.
RECONSTRUCTORS: frozenset[tuple[str, str]] = frozenset(
    _pairs(_NUMPY)
    | _pairs(_PYTHON)
    | _pairs(_SCIPY)
    | _pairs(_PANDAS)
    | _pairs(_SKLEARN_STATE)
    | _pairs(_SKLEARN_ESTIMATORS)
)

BASE: frozenset[tuple[str, str]] = RECONSTRUCTORS | REFERENCE_ONLY


# Reconstructors that instantiate the class passed as their first argument (cls.__new__ without __init__'s
# checks): that class must be one of these, None meaning any class `may_call` allows. Passing a reference-only
# type instead (`_new_Index(numpy.ndarray, {"shape": ...})`) would be a call in disguise.
_INDEX_CLASSES = frozenset(
    (module, name)
    for module, names in _PANDAS.items()
    for name in names
    if name.endswith("Index") and not name.startswith("_")
)
_BIT_GENERATORS = frozenset(
    (module, name)
    for module, names in _NUMPY.items()
    if module.startswith("numpy.random._") and module != "numpy.random._pickle"
    for name in names
    if name not in ("RandomState", "Generator")
)
CLASS_ARGUMENT: dict[tuple[str, str], frozenset[tuple[str, str]] | None] = {
    ("copyreg", "__newobj__"): None,
    ("copyreg", "_reconstructor"): None,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): frozenset({("numpy", "ndarray")}) for core in ("core", "_core")},
    ("pandas.core.indexes.base", "_new_Index"): _INDEX_CLASSES,
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): frozenset(
        {("pandas.arrays", "StringArray"), ("pandas.core.arrays.string_", "StringArray")}
    ),
    ("numpy.random._pickle", "__bit_generator_ctor"): _BIT_GENERATORS,
    ("numpy.ma.core", "_mareconstruct"): frozenset({("numpy.ma.core", "MaskedArray"), ("numpy.ma", "MaskedArray")}),
    **{(module, "newObj"): None for module, names in _SKLEARN_STATE.items() if "newObj" in names},
}


@dataclass(frozen=True)
class Allowlist:
    """Which globals a model may import; `extra` are the operator's pairs (`Settings.pickle_allowlist_extra`),
    `joblib` adds joblib's array placeholder."""

    extra: frozenset[tuple[str, str]] = frozenset()
    joblib: bool = False

    def allows(self, module: str, name: str) -> bool:
        pair = canonical(module, name)
        return pair in BASE or pair in self.extra or (self.joblib and pair == JOBLIB_ARRAY_WRAPPER)

    def may_call(self, module: str, name: str) -> bool:
        """May the unpickler call this global (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST, or as the class given to
        `copyreg.__newobj__`)? True only for reconstructors: allowlisted classes and the functions their
        `__reduce__` names (numpy's array/dtype/scalar builders, copyreg/_codecs helpers, Cython's
        `__pyx_unpickle_*`, joblib's array wrapper). False for what may only be referenced (REFERENCE_ONLY:
        ufuncs, pooling and score functions, numpy types) and for anything not allowlisted.
        PICKLE_ALLOWLIST_EXTRA entries count as reconstructors: the operator added them to be loaded.
        """
        pair = canonical(module, name)
        return self.allows(*pair) and pair not in REFERENCE_ONLY

    def may_instantiate(self, reconstructor: tuple[str, str], cls: tuple[str, str]) -> bool:
        """May `reconstructor` (a CLASS_ARGUMENT key) be given `cls` as the class it instantiates?"""
        allowed = CLASS_ARGUMENT.get(canonical(*reconstructor), frozenset())
        pair = canonical(*cls)
        return self.may_call(*pair) if allowed is None else pair in allowed

    def may_wrap(self, module: str, name: str) -> bool:
        """May `functools.partial` wrap this global? Only a function a model may keep (REFERENCE_ONLY_FUNCTIONS,
        or an operator's PICKLE_ALLOWLIST_EXTRA entry): calling the partial at predict time calls nothing else."""
        pair = canonical(module, name)
        return pair in REFERENCE_ONLY_FUNCTIONS or pair in self.extra

    def for_format(self, fmt: str) -> Allowlist:
        return Allowlist(self.extra, joblib=fmt == JOBLIB)
